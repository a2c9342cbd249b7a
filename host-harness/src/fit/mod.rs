//! Fitting parameters to tasks: [`train`] trains any [`Model`](crate::model::Model) on fresh tasks, [`optim`] holds
//! the optimisers and the least-squares fits written once, and [`references`] fits the GD references of the deep and
//! recurrent experiments on tuning tasks.

pub mod optim;
pub mod references;
pub mod train;
