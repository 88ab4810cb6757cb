"""One module per scenario; each exposes `run(workdir, quick) -> Row` and stops by itself within its bound."""
