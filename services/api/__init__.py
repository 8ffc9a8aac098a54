"""`facestream api`: the HTTP API (and, next, the console) over the gallery, the recognizer and the events."""
