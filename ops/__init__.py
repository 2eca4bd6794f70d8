"""Operations tools outside the model package: local service stack, load generator, tuning launcher."""
