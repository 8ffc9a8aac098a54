"""Training and evaluation of the Siamese network (contrastive loss) and the LFW benchmark."""
