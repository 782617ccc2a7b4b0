"""flchain-plugin: an RFC 9162 transparency log for federated and centralised training."""
