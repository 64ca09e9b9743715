#![forbid(unsafe_code)]
//! Topic names and filters: validation, the subscription trie, matching.

