"""Video: a space-time U-Net inflated from the image U-Net, moving digits and your own videos."""
