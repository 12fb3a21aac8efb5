"""Agent heads on the shared world-model interface: CMA-ES controller, latent planners, actor-critic."""
