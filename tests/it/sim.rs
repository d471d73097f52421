//! polytape-sim on its own: the protocol rules, the listing, each fault, determinism.
