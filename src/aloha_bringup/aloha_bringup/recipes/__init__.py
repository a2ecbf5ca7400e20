"""The simulation training recipes: train_sim (demos -> dataset -> policy -> evaluation) and the
stages it can add, pretrain_vision and render_grounding."""
