"""Storage and time: the databases, the bulk connection, the prediction log, the model store, champion state,
artefact paths, settings and the clock.

It knows the spec's shape (tables, keys, column types), never the contract's rules.
"""
