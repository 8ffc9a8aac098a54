"""The embedding networks, in PyTorch. Each takes N x 3 x S x S input normalized by its checkpoint's
`input_norm` and returns N x D raw descriptors (the caller L2-normalizes).

    faceapi_resnet  the 128-d ResNet of face-api.js (a port of dlib's), and its tfjs weight reader
    scratch_cnn     a compact VGG-style CNN with a global depthwise head, for training from scratch
"""
