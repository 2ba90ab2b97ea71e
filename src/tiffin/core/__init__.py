"""The data core: what a row is. The dataset spec, the named parsers and the contract.

Pure: no I/O but reading a spec file, no clock.
"""
