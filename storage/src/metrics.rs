//! RocksDB's size properties as metrics, sampled by whoever owns the store
//! (the node's driver, every few seconds).
//!
//! Gauges, per column family, labelled `node` and `cf`:
//!
//! - `coffer_rocksdb_estimate_num_keys`: RocksDB's estimate of its keys;
//! - `coffer_rocksdb_sst_files_size_bytes`: bytes of its SST files;
//! - `coffer_rocksdb_memtables_size_bytes`: bytes of its memtables.

use rocksdb::properties::{PropName, CUR_SIZE_ALL_MEM_TABLES, ESTIMATE_NUM_KEYS, TOTAL_SST_FILES_SIZE};

use crate::db::{Db, COLUMN_FAMILIES};

/// The sampled properties, the gauge each one sets and what it means.
const PROPERTIES: [(&PropName, &str, &str); 3] = [
    (ESTIMATE_NUM_KEYS, "coffer_rocksdb_estimate_num_keys", "RocksDB's estimate of the keys of a column family"),
    (TOTAL_SST_FILES_SIZE, "coffer_rocksdb_sst_files_size_bytes", "Bytes of a column family's SST files"),
    (CUR_SIZE_ALL_MEM_TABLES, "coffer_rocksdb_memtables_size_bytes", "Bytes of a column family's memtables"),
];

/// Sets the RocksDB gauges of node `node` from `db`'s properties. Reading a
/// property takes no IO; one RocksDB cannot answer is skipped.
pub fn record_rocksdb_metrics(db: &Db, node: u64) {
    let node = node.to_string();
    for (_, gauge, help) in PROPERTIES {
        metrics::describe_gauge!(gauge, help);
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
