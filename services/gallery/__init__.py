"""`facestream gallery`: enroll, list and remove people."""
