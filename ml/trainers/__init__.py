"""Trainers behind one interface (`ml.trainers.base.Trainer`): LightGBM, XGBoost and a PyTorch sequence model."""
