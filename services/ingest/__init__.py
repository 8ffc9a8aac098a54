"""The ingest service: read cameras (RTSP, HTTP, files, devices) and publish JPEG frames to Kafka.

config.py holds the settings and the camera list, cameras.py the pure decisions (backoff, pacing, frame-rate
cap, encoding under the message limit), reader.py one thread per camera, main.py the process around them.
"""
