{{/* The chart's name. */}}
{{- define "runbookd.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The resource name prefix, also the Service's name. */}}
{{- define "runbookd.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Labels that select the pods. */}}
{{- define "runbookd.selectorLabels" -}}
app.kubernetes.io/name: {{ include "runbookd.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Labels of every resource. */}}
{{- define "runbookd.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "runbookd.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* The Secrets' names: the one given, or the one the chart creates. */}}
{{- define "runbookd.webhookSecret" -}}
{{- .Values.webhookTokenSecret.name | default (printf "%s-webhook" (include "runbookd.fullname" .)) -}}
{{- end -}}
{{- define "runbookd.sessionSecret" -}}
{{- .Values.sessionKeySecret.name | default (printf "%s-session" (include "runbookd.fullname" .)) -}}
{{- end -}}
{{- define "runbookd.operatorSecret" -}}
{{- .Values.operatorTokenSecret.name | default (printf "%s-operator" (include "runbookd.fullname" .)) -}}
{{- end -}}

{{/* With postgres: whether the chart adds the operator user (config has no auth.users). */}}
{{- define "runbookd.operatorUser" -}}
{{- $auth := .Values.config.auth | default dict -}}
{{- if and .Values.postgres.enabled (not $auth.users) }}true{{ end -}}
{{- end -}}

{{/* The ServiceAccount's name. */}}
{{- define "runbookd.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- .Values.serviceAccount.name | default (include "runbookd.fullname" .) -}}
{{- else -}}
{{- .Values.serviceAccount.name | default "default" -}}
{{- end -}}
{{- end -}}

{{/* A probe (list PROBE PORT): an httpGet or tcpSocket without a port gets
containerPort, as a number (podman 4.3's play kube reads only numeric probe ports). */}}
{{- define "runbookd.probe" -}}
{{- $p := deepCopy (index . 0) -}}
{{- $port := index . 1 -}}
{{- range $kind := list "httpGet" "tcpSocket" -}}
{{- $h := get $p $kind -}}
{{- if and $h (not $h.port) -}}
{{- $_ := set $h "port" $port -}}
{{- end -}}
{{- end -}}
{{- toYaml $p -}}
{{- end -}}
