"""Face verification: margin heads, embedding training, embedding extraction and pair scoring, QuantFace."""
