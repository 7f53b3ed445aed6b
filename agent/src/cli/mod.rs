//! The local commands of `hoist-agent`.
