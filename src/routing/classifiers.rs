//! Routers backed by the embedded candle classifier: trained routers from
//! `routers/<name>/` and centroid routers built from a policy's example prompts.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;

use super::{Classified, Classify};
use crate::classifier::service::Router;
use crate::classifier::{CentroidRouter, Classifier, ClassifierService, Encoder, ServiceConfig, Stage};
use crate::config::RouterRef;
use crate::reload::SharedRouterFactory;

struct ServiceRouter(ClassifierService);

impl Classify for ServiceRouter {
    fn labels(&self) -> &[String] {
        self.0.labels()
    }

    fn classify(&self, text: String) -> BoxFuture<'_, Result<Classified, String>> {
        Box::pin(async move {
            let c = self.0.classify(text).await.map_err(|e| e.to_string())?;
            let stage = match c.stage {
                Stage::Fast => "fast",
                Stage::Encoder => "encoder",
            };
            Ok(Classified { probs: c.probs, stage, elapsed: c.elapsed })
        })
    }
}

/// Loads routers on demand; the plain backbone for centroid routers is loaded once and
/// shared by all of them.
pub fn factory(models_dir: PathBuf) -> SharedRouterFactory {
    let backbone: Arc<Mutex<Option<Arc<Encoder>>>> = Arc::default();
    Arc::new(move |r: &RouterRef| {
        let router: Arc<dyn Router> = match r {
            RouterRef::Trained { dir, .. } => Arc::new(Classifier::load(dir, &models_dir).map_err(|e| e.to_string())?),
            RouterRef::Centroid { examples } => {
                let encoder = {
                    let mut cached = backbone.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    match cached.as_ref() {
                        Some(e) => e.clone(),
                        None => {
                            let e = CentroidRouter::load_encoder(&models_dir).map_err(|e| e.to_string())?;
                            *cached = Some(e.clone());
                            e
                        }
                    }
                };
                Arc::new(CentroidRouter::new(encoder, examples.clone()).map_err(|e| e.to_string())?)
            }
        };
        let service = ClassifierService::start(router, ServiceConfig::default()).map_err(|e| e.to_string())?;
        Ok(Arc::new(ServiceRouter(service)) as Arc<dyn Classify>)
    })
}
