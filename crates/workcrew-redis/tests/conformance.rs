//! The store conformance suite against the shared Redis server (`REDIS_URL`),
//! each rule under a key prefix of its own, deleted afterwards.

mod support;

workcrew::store_conformance_tests!(support::store);
