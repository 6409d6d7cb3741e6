"""Distil an EfficientAD teacher from a ResNet on an image folder: python pretrain_teacher.py --image_dir DIR."""
from efficientad.pretrain import main

if __name__ == "__main__":
    main()
