//! Pipeline scenarios on DynamoDB + its stream + SQS FIFO (moto), driven locally.

closeflow_tests::pipeline_tests!(closeflow_tests::Backend::DynamoDb);
