"""Weather corruptions (fog, frost, snow, spatter): placeholder until the weather module lands."""
