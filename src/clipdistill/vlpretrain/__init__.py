"""`clipdistill vlpretrain`: pretrain a ViLT student on image-caption pairs (ITM with hard negatives, whole-word
MLM, optional ITC) and write it as a Hugging Face ViLT folder."""
