"""Framework runners: each module exposes `run(ctx: trainer.context.RunContext) -> None` (see trainer.context for
the duties every runner keeps). Heavy imports (torch, transformers, lightning, nemo) happen inside `run`."""
