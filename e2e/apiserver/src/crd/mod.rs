//! CustomResourceDefinitions: turning a CRD object into a served resource ([`registry`]),
//! validating custom resources against its schema and CEL rules ([`validate`]), and printing them
//! as kubectl tables with its printer columns ([`table`]).

pub mod registry;
pub mod table;
pub mod validate;
