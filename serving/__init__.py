"""gRPC transport of Brew (brew.v1.RankingService): servicer, batcher,
metrics, health, configuration, server entry point."""
