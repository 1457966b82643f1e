package keyspace

// Keys of the webhook endpoints (package dispatcher): one small set, in one
// shard.
//
//	<ns>:{<tag>}:ep:disabled   hash  endpoint id -> why and when a 410 disabled it (JSON)

// endpointShard holds the endpoints' keys.
var endpointShard = ShardOf("endpoints")

// EndpointsDisabled holds the endpoints disabled by a 410 answer.
func (s Space) EndpointsDisabled() string { return s.shardPrefix(endpointShard) + "ep:disabled" }
