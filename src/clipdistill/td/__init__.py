"""CLIP-TD: CLIP teaching a vision-language task student (VQA / SNLI-VE / VCR) during fine-tuning.

The objective (token selection, confidence weights, feature distillation) is OUR RECONSTRUCTION of the
paper's unpublished rules (docs/clip_td.md); every choice is a config option.
"""
