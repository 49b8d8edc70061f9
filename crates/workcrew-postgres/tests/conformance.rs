//! The store conformance suite against the real Postgres server at `DATABASE_URL`: one
//! test per rule, each in a schema of its own.

mod support;

workcrew::store_conformance_tests!(|| async { support::isolated("conformance").await });
