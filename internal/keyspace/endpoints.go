package keyspace

// Keys of the webhook endpoints and recoveries (package dispatcher): one
// small set, in one shard, so that a change is one transaction.
//
//	<ns>:{<tag>}:ep:api        hash    endpoint id -> an endpoint managed through the API (JSON, with its secrets)
//	<ns>:{<tag>}:ep:ver        string  counts the changes of ep:api and ep:disabled; replicas poll it
//	<ns>:{<tag>}:ep:disabled   hash    endpoint id -> why and when a 410 disabled it (JSON)
//	<ns>:{<tag>}:ep:gone       hash    endpoint id -> when it was deleted (unix ms): its deliveries are dropped
//	<ns>:{<tag>}:rcv:<id>      hash    a recovery: its window, position and counts
//	<ns>:{<tag>}:rcv:<id>:s    set     the deliveries it scheduled (until it is done)
//	<ns>:{<tag>}:rcv:<id>:d    set     of those, the ones that ended
//
// The endpoints live as long as they are not deleted (they are the
// configuration, not data); ep:gone and the recoveries expire with the
// events retention.

// endpointShard holds the endpoints' keys.
var endpointShard = ShardOf("endpoints")

// EndpointsAPI holds the endpoints managed through the API.
func (s Space) EndpointsAPI() string { return s.shardPrefix(endpointShard) + "ep:api" }

// EndpointsVersion counts the changes to the endpoints.
func (s Space) EndpointsVersion() string { return s.shardPrefix(endpointShard) + "ep:ver" }

// EndpointsDisabled holds the endpoints disabled by a 410 answer.
func (s Space) EndpointsDisabled() string { return s.shardPrefix(endpointShard) + "ep:disabled" }

// EndpointsGone holds the endpoints deleted through the API.
func (s Space) EndpointsGone() string { return s.shardPrefix(endpointShard) + "ep:gone" }

// Recovery is the state of recovery id.
func (s Space) Recovery(id string) string { return s.shardPrefix(endpointShard) + "rcv:" + id }

// RecoverySets are the sets of the deliveries recovery id scheduled, and
// of those that ended.
func (s Space) RecoverySets(id string) (scheduled, ended string) {
	k := s.Recovery(id)
	return k + ":s", k + ":d"
}
