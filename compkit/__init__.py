"""compkit: a toolkit for Kaggle-style medical image segmentation competitions."""
__version__ = "0.1.0"
