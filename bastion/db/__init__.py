"""Storage: models, engine, migrations, and the operations on them."""
