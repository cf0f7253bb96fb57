# Stage runner shared by the staged recipes (recipes/demo.sh, recipes/corpora/paper.sh), icefall style.
# Source it after setting STAGE, STOP (the --stage/--stop-stage range) and WORK (the work folder).

run_stage() {  # run_stage N NAME CMD...: skip when done, time it, mark it done
  local n=$1 name=$2
  shift 2
  if [ "$n" -lt "$STAGE" ] || [ "$n" -gt "$STOP" ]; then return; fi
  if [ -f "$WORK/.done.$name" ]; then
    echo "== stage $n $name: done before, skipping (rm $WORK/.done.$name to redo)"
    return
  fi
  echo "== stage $n $name"
  local t0=$SECONDS
  "$@"
  echo -e "$n\t$name\t$((SECONDS - t0))" >> "$WORK/timings.tsv"
  touch "$WORK/.done.$name"
}
