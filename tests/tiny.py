"""The smallest model the tests train: ResNet-18 at 64 px, E=32, K=2, one block each, top-1 (``--set`` overrides)."""

TINY_MODEL = [
    "model.backbone=resnet18", "model.image_size=64", "model.embed_dim=32", "model.num_hypotheses=2",
    "model.mht_blocks=1", "model.num_heads=2", "selection.top_n=1", "selection.decoder_blocks=1",
]
