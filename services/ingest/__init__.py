"""The ingest service: read cameras (RTSP, HTTP, files, devices) and publish JPEG frames to Kafka.

config.py holds the settings and the camera list, cameras.py the pure decisions (backoff, pacing, frame-rate
cap, encoding under the message limit, session ids), reader.py the loop of one camera in a process of its own,
camera.py ingest's thread per camera (sessions and seq, metrics, restarts), redact.py the masking of
credentials in logs, main.py the process around them.
"""
