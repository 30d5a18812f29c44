"""The MANO hand: the model and its file reader (``model``), the rig, hmh's synthetic MANO-format hand, OBJ meshes."""
