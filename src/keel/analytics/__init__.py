"""Analytics of counted calls: rollups written with each batch, and the queries that read them."""
