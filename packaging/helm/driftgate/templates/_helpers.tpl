{{/* The chart's name, or nameOverride. */}}
{{- define "driftgate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The objects' name: fullnameOverride, else the release name (with the chart's name unless it contains it). */}}
{{- define "driftgate.fullname" -}}
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

{{- define "driftgate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "driftgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "driftgate.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "driftgate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: node-agent
{{- end -}}

{{- define "driftgate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "driftgate.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/*
driftgate.toml from `config` (plus `cluster`). Helm reads every number in values as a float,
and toToml would write 1073741824 as 1073741824.0, which an integer setting refuses; a float
with no fraction is written back as the integer it was (a float setting takes an integer too).
*/}}
{{- define "driftgate.toml" -}}
{{- $config := deepCopy .Values.config -}}
{{- if .Values.cluster -}}
{{- $_ := set $config "cluster" .Values.cluster -}}
{{- end -}}
{{- regexReplaceAll "(?m)^(\\s*[A-Za-z0-9_\"-]+ = -?[0-9]+)\\.0$" (toToml $config) "${1}" -}}
{{- end -}}

{{/* The metrics port: from config.metrics.listen when it is host:port, else metrics.port. */}}
{{- define "driftgate.metricsPort" -}}
{{- $listen := "" -}}
{{- with .Values.config.metrics -}}{{- $listen = toString (default "" .listen) -}}{{- end -}}
{{- if regexMatch ":[0-9]+$" $listen -}}
{{- regexFind "[0-9]+$" $listen -}}
{{- else -}}
{{- .Values.metrics.port -}}
{{- end -}}
{{- end -}}
