"""Dataset builders: every source is converted into the canonical driving schema (see `alphadrive_trl.data`)."""
