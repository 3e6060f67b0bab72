pub mod chronik;
pub mod mock_broker;
