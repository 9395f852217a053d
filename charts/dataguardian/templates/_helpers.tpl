{{/*
The chart's name, or nameOverride.
*/}}
{{- define "dataguardian.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The release's full name: fullnameOverride, else the release name when it contains the chart's
name ("dataguardian" for `helm install dataguardian`), else "<release>-<name>". Names of the
operator's own objects start with it; the user roles keep their fixed names (RoleBindings in
tenant namespaces refer to them).
*/}}
{{- define "dataguardian.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The helm.sh/chart label: name-version.
*/}}
{{- define "dataguardian.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of every object. config/default (kustomize) sets the same ones except helm.sh/chart and
app.kubernetes.io/managed-by.
*/}}
{{- define "dataguardian.labels" -}}
helm.sh/chart: {{ include "dataguardian.chart" . }}
app.kubernetes.io/name: {{ include "dataguardian.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: dataguardian
{{- end }}

{{/*
Selector labels of the operator pods. Agent Job pods carry app.kubernetes.io/name: dataguardian
too, with another component (backup, restore, validation, prune).
*/}}
{{- define "dataguardian.selectorLabels" -}}
app.kubernetes.io/name: {{ include "dataguardian.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/*
Labels of the operator's objects (Deployment, pods, Service, ...): the common labels and the
component.
*/}}
{{- define "dataguardian.operatorLabels" -}}
{{ include "dataguardian.labels" . }}
app.kubernetes.io/component: operator
{{- end }}

{{/*
The operator's ServiceAccount.
*/}}
{{- define "dataguardian.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "dataguardian.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
An image reference from {registry, repository, tag, digest}: the digest wins over the tag; an
empty tag is the chart's appVersion. Called with (dict "image" ... "registry" ... "root" $).
*/}}
{{- define "dataguardian.imageRef" -}}
{{- $ref := .image.repository }}
{{- with .registry }}
{{- $ref = printf "%s/%s" (trimSuffix "/" .) $ref }}
{{- end }}
{{- if .image.digest }}
{{- printf "%s@%s" $ref .image.digest }}
{{- else }}
{{- printf "%s:%s" $ref (.image.tag | default .root.Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/*
The operator image: global.imageRegistry replaces image.registry.
*/}}
{{- define "dataguardian.image" -}}
{{- include "dataguardian.imageRef" (dict "image" .Values.image "registry" (.Values.global.imageRegistry | default .Values.image.registry) "root" .) }}
{{- end }}

{{/*
The agent image (DG_AGENT_IMAGE). global.imageRegistry is not applied here: the operator applies
it (DG_IMAGE_REGISTRY) to the agent image and to the default sandbox images alike.
*/}}
{{- define "dataguardian.agentImage" -}}
{{- include "dataguardian.imageRef" (dict "image" .Values.agent.image "registry" .Values.agent.image.registry "root" .) }}
{{- end }}

{{/*
The metrics Service's name.
*/}}
{{- define "dataguardian.metricsServiceName" -}}
{{- printf "%s-metrics" (include "dataguardian.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
