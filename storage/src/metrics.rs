//! RocksDB's size properties as metrics, sampled by whoever owns the store
//! (the node's driver, every few seconds).
//!
//! Gauges, per column family, labelled `node` and `cf`:
//!
//! - `coffer_rocksdb_estimate_num_keys`: RocksDB's estimate of its keys;
//! - `coffer_rocksdb_sst_files_size_bytes`: bytes of its SST files;
//! - `coffer_rocksdb_memtables_size_bytes`: bytes of its memtables;
//! - `coffer_rocksdb_table_readers_bytes`: memory of its open SST files'
//!   readers outside the block cache.
//!
//! And one gauge per node, labelled `node`:
//!
//! - `coffer_rocksdb_block_cache_usage_bytes`: bytes in the block cache,
//!   which every column family shares.
//!
//! Together with the two configured bounds (block cache, all memtables),
//! these say where a node's memory goes.

use rocksdb::properties::{
    PropName, BLOCK_CACHE_USAGE, CUR_SIZE_ALL_MEM_TABLES, ESTIMATE_NUM_KEYS, ESTIMATE_TABLE_READERS_MEM,
    TOTAL_SST_FILES_SIZE,
};

use crate::db::{Db, COLUMN_FAMILIES};

/// The sampled properties, the gauge each one sets and what it means.
const PROPERTIES: [(&PropName, &str, &str); 4] = [
    (ESTIMATE_NUM_KEYS, "coffer_rocksdb_estimate_num_keys", "RocksDB's estimate of the keys of a column family"),
    (TOTAL_SST_FILES_SIZE, "coffer_rocksdb_sst_files_size_bytes", "Bytes of a column family's SST files"),
    (CUR_SIZE_ALL_MEM_TABLES, "coffer_rocksdb_memtables_size_bytes", "Bytes of a column family's memtables"),
    (
        ESTIMATE_TABLE_READERS_MEM,
        "coffer_rocksdb_table_readers_bytes",
        "Bytes of a column family's SST readers outside the block cache",
    ),
];

/// The shared block cache's gauge and what it means.
const BLOCK_CACHE: (&str, &str) =
    ("coffer_rocksdb_block_cache_usage_bytes", "Bytes in the block cache all column families share");

/// Sets the RocksDB gauges of node `node` from `db`'s properties. Reading a
/// property takes no IO; one RocksDB cannot answer is skipped.
pub fn record_rocksdb_metrics(db: &Db, node: u64) {
    let node = node.to_string();
    for (_, gauge, help) in PROPERTIES {
        metrics::describe_gauge!(gauge, help);
    }
    metrics::describe_gauge!(BLOCK_CACHE.0, BLOCK_CACHE.1);
    // The cache is shared: any column family reports the same usage.
    if let Ok(handle) = db.cf(COLUMN_FAMILIES[0]) {
        if let Ok(Some(value)) = db.rocksdb().property_int_value_cf(handle, BLOCK_CACHE_USAGE) {
            metrics::gauge!(BLOCK_CACHE.0, "node" => node.clone()).set(value as f64);
        }
    }
    for cf in COLUMN_FAMILIES {
        let Ok(handle) = db.cf(cf) else { continue };
        for (property, gauge, _) in PROPERTIES {
            if let Ok(Some(value)) = db.rocksdb().property_int_value_cf(handle, property) {
                metrics::gauge!(gauge, "node" => node.clone(), "cf" => cf).set(value as f64);
            }
        }
    }
}
