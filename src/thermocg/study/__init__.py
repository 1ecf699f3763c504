"""The transferability study: every CG model at every state point, against the all-atom truth.

``thermocg study CONFIG.yaml`` runs, for the config's state points::

    aa/<state>            all-atom data (generated with OpenMM, or imported)
    map/<state>           atoms -> beads (RUN_DIR/cg/<state>.h5md)
    ref/<state>           observables of the mapped AA data: RDF, ADF, diffusion coefficient
    model/<name>          a potential trained on one state or a pooled set (HIP-NN-TS or MS-CG)
    md/<name>/<state>     NVT CG MD of that model at that state's AA temperature and density
    eval/<name>/<state>   force error on the mapped AA frames, RDF/ADF error and D ratio vs ref
    report                transferability matrices, figures, index.html and summary.md

Each of these is a *unit of work* with a key derived from its inputs (config sections and the
contents of the files it reads); a finished unit leaves a manifest holding its key, its stage's
typed result (paths relative to the run directory) and the hashes of its outputs and of its
upstream manifests, and a rerun skips every unit whose manifest holds the current key, whose
outputs are intact and whose upstream units were not rerun. Independent units run in parallel through Dask's distributed scheduler
(``study.max_workers`` worker processes, ``study.threads_per_worker`` threads each;
``study.scheduler_address`` attaches to a running scheduler, e.g. one that dask-jobqueue started on an
HPC cluster). With ``max_workers: 1`` everything runs in this process, in dependency order.

The package follows that structure:

- :mod:`~thermocg.study.plan`: the models and units of work, their keys and dependencies, and the
  checks made before any work (:func:`validate_study`);
- :mod:`~thermocg.study.stages`: the stage functions (:class:`Stages`, :func:`default_stages`) and
  their typed results;
- :mod:`~thermocg.study.metrics`: the structure of CG frames, its errors, the matrices, verdicts
  and the family comparison;
- :mod:`~thermocg.study.execution`: manifests, running units in this process or on Dask,
  :func:`run_study` and :func:`collect_results`;
- :mod:`~thermocg.study.files`: content hashes of input and output files (cached by size and
  modification time) and paths relative to the run directory.
"""

from thermocg.study.execution import (StudyError, StudyRun, Manifest, collect_results, execute_unit, manifest_path,
                                      read_manifest, run_study, trusted_manifests)
from thermocg.study.files import FileHashes
from thermocg.study.metrics import (FAMILY_LABELS, METRIC_LABELS, METRICS, Structure, compare_families, judge,
                                    measure_structure, noise_floor, structure_errors, summarize, verdicts,
                                    write_matrices)
from thermocg.study.plan import (STUDY_FORMAT_VERSION, ModelSpec, StateBox, Unit, estimated_box_length_A, plan_models,
                                 plan_units, state_boxes, state_points, validate_study)
from thermocg.study.stages import (AllAtomResult, Evaluation, MapResult, ReferenceResult, Stages, default_stages,
                                   evaluate_model, held_out_frames, imported_ns_per_day, reference_observables,
                                   result_type)

__all__ = [
    "run_study", "StudyRun", "StudyError", "collect_results", "execute_unit", "Manifest", "manifest_path",
    "read_manifest", "trusted_manifests", "FileHashes",
    "plan_units", "plan_models", "state_points", "validate_study", "estimated_box_length_A", "state_boxes",
    "StateBox", "ModelSpec", "Unit", "STUDY_FORMAT_VERSION",
    "Stages", "default_stages", "result_type", "AllAtomResult", "MapResult", "ReferenceResult", "Evaluation",
    "reference_observables", "evaluate_model", "held_out_frames", "imported_ns_per_day",
    "METRICS", "METRIC_LABELS", "FAMILY_LABELS", "Structure", "measure_structure", "structure_errors", "summarize",
    "verdicts", "compare_families", "noise_floor", "judge", "write_matrices",
]
