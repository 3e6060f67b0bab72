pub mod mock_broker;
