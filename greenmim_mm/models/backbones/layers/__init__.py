"""Stock Swin and Twins layers on visible tokens, side by side (one file each)."""
