"""The Hydra configs shipped with noisewarp (``noisewarp-run``'s config module)."""
