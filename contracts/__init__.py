"""Yiwang contracts: the one definition of every event and RPC payload.

Pure data (pydantic v2 models): no nameko, no pymongo. Both ends validate with these.
"""
