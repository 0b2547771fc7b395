"""The venues layer: one module per exchange (stream URLs per route, frames into
``models.Tick``, id semantics); nothing here knows storage, numbers or the screen."""
