"""The pure rating layer: rate decks, the compiled prefix table, prices and calling plans."""
