"""The patch catalog: what upstreams offer, stored once, and the content files behind it.

Patch servers and their sync state, the catalog store and its queries, replication between
instances, the content store (local or shared storage) and the vulnerability feeds live here
because every other domain reads the catalog but only sync, replication and feeds write it.
"""
