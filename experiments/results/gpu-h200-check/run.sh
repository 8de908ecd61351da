#!/usr/bin/env bash
# Device checks for one lent GPU machine: install, CUDA tests, trainer throughput, GPU study preset.
set -u
START=$SECONDS
LIMIT=${LIMIT:-555}
left() { echo $(( LIMIT - (SECONDS - START) )); }
export PYTHONUNBUFFERED=1 VIDMINE_SHARED_DATA=$PWD/.gpu/data
mkdir -p ../shared && ln -sfn "$PWD/.gpu/data" ../shared/data
if [ -z "${SKIP_INSTALL:-}" ]; then
  PY=python3
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir .whl/av-*.whl .whl/lmdb-*.whl \
      .whl/sqlalchemy-*.whl .whl/alembic-*.whl .whl/mako-*.whl 2>&1 | tail -3
  $PY -m pip install -q --no-index --no-deps --no-build-isolation -e . 2>&1 | tail -3 \
    || echo "editable install failed"
else
  PY=${PY:-python3}
fi
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  nproc; free -g | head -2
  $PY -c "import torch, torchvision, cv2, av, lmdb, sqlalchemy, vidmine.training.cli as c; print('torch', torch.__version__, 'tv', torchvision.__version__, 'cv2', cv2.__version__, 'av', av.__version__, 'cuda', torch.cuda.is_available(), c.__file__)"
} 2>&1 | tee $OUT/env.txt
echo "== pytest (training, CUDA visible) $(left)s left"
timeout 120 $PY -m pytest -q -p no:cacheprovider -m "not postgres" tests/test_training_augment.py \
  tests/test_training_trainer.py tests/test_training_data.py tests/test_training_losses.py 2>&1 \
  | tail -25 | tee $OUT/pytest.txt
echo "== benchmarks/train.py $(left)s left"
timeout 150 $PY benchmarks/train.py --json > $OUT/bench_train.json 2> $OUT/bench_train.err
tail -3 $OUT/bench_train.err; cat $OUT/bench_train.json
echo "== study gpu preset $(left)s left"
DEADLINE=$(python3 -c "print(round(($(left) - 150) / 60, 1))")
timeout $(( $(left) - 15 )) $PY experiments/study.py --scale ${SCALE:-gpu} --seeds 0 --tracker lk \
  --out /tmp/study-gpu --deadline-min $DEADLINE ${STUDY_FLAGS:-} > $OUT/study.txt 2>&1
echo "study rc $?"; tail -15 $OUT/study.txt
tar czf $OUT/study_state.tgz -C /tmp/study-gpu state study.log results.md results.json 2>/dev/null
ls /tmp/study-gpu/state; echo "done in $((SECONDS - START)) s"
