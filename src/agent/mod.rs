//! The agent: streaming backup, restore and validation pipelines that run inside Jobs.
