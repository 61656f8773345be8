#!/usr/bin/env bash
# Resume the successor mono teacher's CPU training (issue "Teachers that generalise") in the background:
# training/resume.sh with this folder's command and args (see there). Log: $HWKD_HOME/runs/teacher-mix.log
exec "$(dirname "$0")/../resume.sh" teacher-mix
